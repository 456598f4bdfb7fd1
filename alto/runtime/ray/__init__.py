"""The Ray executor.

The driver side of each stage (:mod:`.stage`), the actors that run assembled calls
(:mod:`.actor`), their pool (:mod:`.pool`), tracing inside actors (:mod:`.otel`), the
dispatcher a model client's copies share (:mod:`.shared_dispatcher`) and the runtime that
wires them (:mod:`.backend`). See ``docs/ray.md``.

Importing this package does not import Ray; its modules do.
"""
