"""Train and evaluate a nerve segmentation network with its original's settings as defaults.

    python experiments/nerve/train_segmenter.py --model unet_mobilenetv2 \
        --data-data-dir data/nerve_supervisely --train-run-dir runs/nerve/unet
    python experiments/nerve/train_segmenter.py --model doubleunet --data-source tfrecord \
        --data-data-dir data/nerve_tfrecords

``--help`` lists every option (``--data-*``, ``--model-*``, ``--train-*``).
"""
from keras_medseg.nerve.segmentation import train_main

if __name__ == "__main__":
    train_main()
