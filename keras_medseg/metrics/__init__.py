"""Evaluation metrics shared by every task (definitions: ``shared/METRICS.md``).

Conventions
-----------
* Argument order is Keras's: ``(y_true, y_pred)``.
* Arrays are numpy; masks are boolean (or 0/1) or label maps selected with ``labels=``.
* ``spacing`` gives one value per spatial axis in ARRAY axis order, in mm. Distance metrics
  called without ``spacing`` use 1.0 per axis (distances are then in voxels).
* Every invalid argument raises ``ValueError`` naming the argument and what was received.

The empty-mask rule (the same everywhere)
-----------------------------------------
* both masks empty: overlap metrics (Dice, IoU) and distances are NaN (undefined);
  :func:`summarize` skips NaNs and reports how many it skipped (``n_nan``);
* exactly one mask empty: Dice = IoU = 0 and distances are ``inf`` (or, with
  ``empty_policy="diagonal"``, the image diagonal in mm, as BraTS-style evaluations do).

Distance modes (``mode=``)
--------------------------
``"surface"`` (default, MONAI-like), ``"medpy"`` (medpy.metric.binary), ``"surfel"``
(DeepMind surface-distance) and ``"evalseg"`` (the EvaluateSegmentation tool used by
iSeg-2017); see :mod:`keras_medseg.metrics.surface`.
"""
# Each submodule's public names are imported below, one block per submodule.
