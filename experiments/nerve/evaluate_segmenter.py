"""Evaluate a trained segmentation run on its fixed split (IoU / Dice, mean, SEM, 95% CI).

    python experiments/nerve/evaluate_segmenter.py runs/nerve/unet --splits val test
"""
from keras_medseg.nerve.segmentation import evaluate_main

if __name__ == "__main__":
    evaluate_main()
