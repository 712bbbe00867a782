"""Results: the append-only JSONL store (:mod:`.store`), the one record writer
(:mod:`.records`) and the one tidy reader everything analyses through (:mod:`.tidy`)."""
