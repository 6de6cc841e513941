"""Run the linked classify-then-segment pipeline over a folder of video frames.

    python experiments/nerve/run_linked.py data/linked runs/nerve/linked \
        --classifier classifier.keras --segmenter runs/nerve/unet/final.keras --layout shared

The folder holds ``order/`` (or ``input/``), ``hdversion/`` and ``annotation/``.
"""
from keras_medseg.nerve.linked import main

if __name__ == "__main__":
    main()
