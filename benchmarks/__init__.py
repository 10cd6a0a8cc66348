"""adaptd's benchmarks: adaptd against its peers on drifting streams (``adaptd bench``).

``streams`` builds the benchmark streams, ``learners`` wraps adaptd's variants and the peer
libraries behind one interface, ``measures`` turns a learner's predictions into the reported
figures, ``suite`` runs everything in one process and ``report`` writes markdown and plots.
Benchmarks are not tests: nothing here asserts a wall-clock time.
"""
