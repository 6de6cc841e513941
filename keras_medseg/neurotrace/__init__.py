"""neurotrace: tracing-difficulty classification of 3D neuron image blocks (3D-SSM).

Morphometric features of SWC reconstructions live in :mod:`keras_medseg.neurotrace.lmeasure`;
the Vaa3D neuron distance is a shared metric, :func:`keras_medseg.metrics.neuron_distance`.
Image and SWC blocks with their CSV index (the Vaa3D plugin's job) are cut by
:mod:`keras_medseg.neurotrace.blocks`; block features and automatic labels (feature-subset
search, safe labeller files) are in :mod:`keras_medseg.neurotrace.labels`.
"""
