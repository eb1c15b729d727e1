"""Stage 03, fine-tuning (notebook ``03_finetune``): the classifier trained from each initialisation, by full
fine-tuning (:mod:`.full`) or as a linear probe on frozen features (:mod:`.linear`), with the class-weighted loss
(:mod:`.loss`) and the label-efficiency sweep (:mod:`.sweep`); the stage, ``run_finetune``, in :mod:`.stage`."""
