"""The one benchmark path: what to time (:mod:`.targets`), the plan and its cells
(:mod:`.plan`), the one timing loop (:mod:`.timing`), fresh-process workers (:mod:`.workers`),
table rows across processes (:mod:`.summary`), trtexec-style GPU phases (:mod:`.phases`)
and the one accuracy check (:mod:`.accuracy`)."""
