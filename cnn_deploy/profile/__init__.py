"""Per-layer profiles: running one (:mod:`.run`), the one categoriser for every backend's
layer names (:mod:`.categories`) and the tidy per-layer table with its analyses (:mod:`.table`)."""
