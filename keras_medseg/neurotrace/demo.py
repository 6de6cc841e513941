"""Demo stage ``neurotrace``: synthetic brain -> blocks -> features -> automatic labels ->
3D-SSM staged training -> accuracy and F1 with predicted and oracle history.

:func:`prepare_sample_blocks` is the whole data side (also used by the notebook); the stage
then trains the 3D-SSM at a quick size with
:func:`keras_medseg.neurotrace.training.train_3dssm`.
"""
from __future__ import annotations

from pathlib import Path

from keras_medseg.demo import Artifact, StageResult, register_stage
from keras_medseg.utils import markdown_table, write_text

__all__ = ["QUICK", "FULL", "prepare_sample_blocks", "run"]

QUICK = dict(n_neurons=16, n_nodes=2000, shape=(48, 160, 160), width=0.25, resnet_epochs=10,
             head_epochs=60, fusion_repeats=3)
"""Demo sizes (``quick=True``)."""
FULL = dict(n_neurons=24, n_nodes=3000, shape=(64, 192, 192), width=0.25, resnet_epochs=20,
            head_epochs=60, fusion_repeats=5)
"""``--full`` demo sizes."""
DEMO_HEAD_LEARNING_RATE = 1e-2
"""Adam learning rate of the two LSTM heads in the demo (few training blocks, few steps)."""
DEMO_FUSION_LEARNING_RATE = 3e-3
"""Adam learning rate of the fusion in the demo."""


def prepare_sample_blocks(out_dir, *, seed=0, n_neurons=10, n_nodes=2000,
                          shape=(48, 160, 160), quick=True, log=None):
    """Synthetic neurons -> blocks -> features -> automatic labels, in ``out_dir``.

    1. :func:`keras_medseg.sampledata.generate_neurotrace` into ``out_dir/neurons``;
    2. :func:`keras_medseg.neurotrace.blocks.cut_blocks_folder` into ``out_dir/blocks``;
    3. stand-in manual labels from the simulated image quality
       (:func:`keras_medseg.neurotrace.labels.simulated_manual_labels`);
    4. :func:`keras_medseg.neurotrace.labels.auto_label_blocks`: difference and L-Measure
       features (``features.csv``), the feature-subset search, the labeller, and the
       ``label`` column of every "many" block.

    Every step is resumable (reruns reuse finished outputs).

    Parameters
    ----------
    out_dir : str or Path
    seed : int
    n_neurons, n_nodes, shape
        Passed to :func:`keras_medseg.sampledata.generate_neurotrace`.
    quick : bool
        Quick labeller search (see ``auto_label_blocks``).
    log : callable, optional
        Called with one line per step.

    Returns
    -------
    Path
        The labelled ``blocks.csv`` (``features.csv`` beside it), ready for
        :func:`keras_medseg.neurotrace.training.load_block_data`.
    """
    from keras_medseg.neurotrace.blocks import cut_blocks_folder
    from keras_medseg.neurotrace.labels import auto_label_blocks, simulated_manual_labels
    from keras_medseg.sampledata import generate_neurotrace

    log = log or (lambda line: None)
    out_dir = Path(out_dir)
    sample = generate_neurotrace(out_dir / "neurons", seed=seed, n_neurons=n_neurons,
                                 shape=shape, n_nodes=n_nodes)
    log(f"{len(sample.neurons)} synthetic neurons of {tuple(sample.shape)} voxels")
    summary = cut_blocks_folder(sample.root, out_dir / "blocks", progress=False)
    csv_path = summary.csv_path
    log(f"{len(summary.rows)} blocks cut ({sum(r['subset'] == 'many' for r in summary.rows)} "
        f"'many')")
    manual = simulated_manual_labels(sample.root, csv_path)
    result = auto_label_blocks(csv_path, manual, quick=quick, seed=seed, progress=False)
    log(str(result))
    return Path(csv_path)


@register_stage("neurotrace", description="synthetic neurons -> blocks -> features -> "
                                          "automatic labels -> 3D-SSM (predicted vs oracle "
                                          "history)", order=50)
def run(stage_dir, *, seed=0, quick=True):
    from keras_medseg.neurotrace import training as T

    sizes = QUICK if quick else FULL
    stage_dir = Path(stage_dir)
    lines = []
    csv_path = prepare_sample_blocks(stage_dir / "sample", seed=seed,
                                     n_neurons=sizes["n_neurons"], n_nodes=sizes["n_nodes"],
                                     shape=sizes["shape"], quick=quick, log=lines.append)
    data = T.load_block_data(csv_path)
    e = sizes["head_epochs"]
    result = T.train_3dssm(
        data,
        data_config=T.SSMDataConfig(val_fraction=0.2, test_fraction=0.3, seed=seed),
        model_config=T.SSMModelConfig(width=sizes["width"]),
        train_config=T.SSMTrainConfig(
            run_dir=str(stage_dir / "run"), resnet_epochs=sizes["resnet_epochs"],
            resnet_learning_rate=1e-3, fcn_epochs=e, fcn_learning_rate=1e-3,
            image_head_epochs=e, image_head_learning_rate=DEMO_HEAD_LEARNING_RATE,
            feature_head_epochs=e, feature_head_learning_rate=DEMO_HEAD_LEARNING_RATE,
            fusion_epochs=e, fusion_learning_rate=DEMO_FUSION_LEARNING_RATE,
            fusion_repeats=sizes["fusion_repeats"], seed=seed))
    rows = [{k: r[k] for k in ("model", "history", "n", "accuracy", "f1_high", "f1_macro")}
            for r in result.results if r["split"] == "test"]
    write_text(stage_dir / "test_results.md", markdown_table(rows))
    pred = result.result("ssm3d", "test", "predicted")
    oracle = result.result("ssm3d", "test", "oracle")
    summary = (
        "\n".join(f"- {line}" for line in lines) + "\n\n"
        f"{len(data)} labelled 'many' blocks from {len(set(data.neurons))} neurons, split by "
        f"neuron ({len(result.split.train)} train / {len(result.split.val)} val / "
        f"{len(result.split.test)} test blocks); ResNet width {sizes['width']}, demo "
        f"learning rates 1e-3 (ResNet, FCN), {DEMO_HEAD_LEARNING_RATE:g} (LSTM heads), "
        f"{DEMO_FUSION_LEARNING_RATE:g} (fusion), model selection on validation.\n\n"
        f"3D-SSM test accuracy {pred['accuracy']:.3f} (F1 high {pred['f1_high']:.3f}) with the "
        f"PREDICTED history of previous blocks; {oracle['accuracy']:.3f} (F1 high "
        f"{oracle['f1_high']:.3f}) with the original's ORACLE history (true labels of the "
        f"previous blocks, label leakage). Paper: 84.07% test accuracy (oracle protocol).")
    return StageResult(summary=summary, artifacts=[
        Artifact("Test accuracy and F1 per model and history protocol", "test_results.md",
                 "table"),
        Artifact("3D-SSM test ROC (predicted history)", "run/ssm3d_test_predicted_roc.png",
                 "figure"),
        Artifact("All results (val and test)", "run/results.csv"),
        Artifact("Confusion matrix, predicted history", "run/ssm3d_test_predicted_CM.txt"),
        Artifact("Confusion matrix, oracle history", "run/ssm3d_test_oracle_CM.txt"),
        Artifact("Run configuration", "run/config.json"),
    ])
