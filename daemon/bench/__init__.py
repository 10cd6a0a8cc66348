"""The code behind ``adaptd bench``: streams, learners, measures, the suite and its report."""
