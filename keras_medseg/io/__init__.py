"""Readers and writers for every kind of data the five tasks use.

One module per kind: ``images`` (class folders, Supervisely exports, image/mask pairs,
tf.data pipelines), ``volumes`` (NIfTI, Analyze, NRRD, MHA/MHD, DICOM -> :class:`Volume`),
``tfrecord``, ``hdf5``, ``swc`` and ``splits``. Import from the submodules
(``from keras_medseg.io.swc import read_swc``); importing this package is cheap.
"""
