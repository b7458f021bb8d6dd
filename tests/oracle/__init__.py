"""The batch oracle: OneMap's hazards, levels, alerts and top K recomputed from the recorded
input topics with plain pandas / geopandas / numpy, independently of the streaming code.

Why: the streaming pipeline keeps per-source state in faust tables, evaluates one batch at a
time and scores each hazard as its record arrives; every one of those steps can be subtly
wrong (a window edge, a hold that never expires, a lost update) while each unit test of a
piece still passes. The oracle recomputes the same answers the slow, obvious way, from the
documentation (docs/feeds.md, docs/rules.md, docs/ranking.md) and the rule files, so the two
can be compared record by record (docs/oracle.md).

It imports nothing of ``onemap``'s streaming or rules logic: only data files are read
(boundaries, registries, rule YAML as plain YAML).
"""
