"""Stage 01, data preparation (notebook ``01_prepare``): dataset files → manifest (:mod:`.manifest`) → split by
woman (:mod:`.split`) → preprocessed cache (:mod:`.preprocess`, :mod:`.cache`) → the datasets the later stages
train on (:mod:`.loaders`). One module per dataset in :mod:`.sources`; file readers in :mod:`.io`; the stage
itself, ``run_prepare``, in :mod:`.stage`."""
