"""Data whose evidence is known, for checking where explanation maps point.

shapes: the Shapes dataset generator (one class-deciding shape among distractors, with its
mask); models: a small CNN and ViT trained on it, whose weights ship with the package;
segmentation: Shapes for segmentation (several shapes of several classes, a label mask);
segmenter: a small encoder-decoder trained on it, shipped likewise (`shapes_segmenter`);
detection: those images at 128 x 128 with a box, label and mask per shape; detector: a small
torchvision FCOS trained on them, shipped likewise (`shapes_detector`); video: Moving Shapes
clips (16 frames; the target shows in a few of them, moving, so its tube is known in space and
time); volume: 32^3 one-channel volumes with one class-deciding solid and its mask;
video_models: small 3-D CNNs trained on both, shipped likewise (`shapes_video_model`,
`shapes_volume_model`).
"""
