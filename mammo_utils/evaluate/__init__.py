"""Stage 04, evaluation (notebook ``04_evaluate``): metrics, the threshold chosen on validation and the patient
bootstrap (:mod:`.metrics`); the stage, ``run_evaluate``, in :mod:`.stage`."""
