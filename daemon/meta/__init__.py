"""Meta-learning: the meta-state shared by all keys (:mod:`adaptd.meta.state`) and its offline
bootstrap from historical records (:mod:`adaptd.meta.train`)."""
