"""Stage 05, Grad-CAM (notebook ``05_gradcam``): the CAM methods (:mod:`.cams`), their scores against the
radiologists' marks (:mod:`.scores`), faithfulness (:mod:`.road`), figures (:mod:`.figures`) and the stage,
``run_gradcam`` (:mod:`.stage`)."""
