"""Stage 02, self-supervised pretraining (notebook ``02_pretrain``): the two views (:mod:`.views`), the methods
(:mod:`.methods`: SimCLR, MoCo v2), what pretraining changed (:mod:`.analysis`) and the stage, ``run_pretrain``
(:mod:`.stage`)."""
