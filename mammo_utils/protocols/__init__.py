"""Stage 06, the protocol study: where a 96.7% can come from.

On the same films, with the same backbones and the same models, how far do the evaluation protocols common in the
MIAS / INbreast literature move the reported number? The paper states no task, split or protocol, so the study
claims nothing about which one it used; it measures what each one does, with a logistic regression on frozen
features and two models that memorise (1-nearest-neighbour, a CNN trained until it fits its training items), on the
real labels and on labels permuted among women (where an honest arm can only score chance).

Arms (:mod:`.arms`; each cross-validated, over several seeds, with patient-bootstrap intervals):

- A0 honest: whole films, folds by woman, epoch and threshold chosen on validation;
- A1: folds by film, so a woman's other film may train;
- A2: K augmented copies of each film made before a split by copy (K = 1, 2, 4, 8; two copy strengths);
- A3a / A3b: native-resolution patches (lesion vs normal tissue) split by patch / by woman;
- A4: A0's split, with epoch, seed and threshold chosen on the test fold over N configurations;
- A5: the leaks together.

Modules, one concern each: :mod:`.arms` (the arms), :mod:`.splits` (each arm's split and the leaks it measures),
:mod:`.items` (films and augmented copies of each strength), :mod:`.patches` (patches and their controls),
:mod:`.labels` (the random-label control), :mod:`.backbones` (one per fold), :mod:`.features` (the on-disk
feature cache, raw pixels), :mod:`.inputs` (what a run reads, built once), :mod:`.probe` (logistic regression and
its choices), :mod:`.crossval` (one arm's cross-validation), :mod:`.nearest` (1-NN), :mod:`.cnn` (the memorising
CNN), :mod:`.scoring`, :mod:`.table`, :mod:`.figures` and :mod:`.study` (the stage, ``run_protocols``).
"""
