"""Meta-learning: the meta-state shared by all keys (:mod:`daemon.meta.state`) and its offline
bootstrap from historical records (:mod:`daemon.meta.train`)."""
