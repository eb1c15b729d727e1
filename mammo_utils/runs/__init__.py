"""The plumbing under every stage: where a run's files live and how they are written (:mod:`.paths`), when a
stage is up to date (:mod:`.stage`), what a run records about itself (:mod:`.provenance`), where the networks
execute (:mod:`.devices`, with the bf16 CPU path in :mod:`.fast_cpu`) and the one Lightning trainer
(:mod:`.trainer`). Nothing here imports a stage."""
