"""The CIFAR distillation benchmark family (the CRD and DKD papers' CIFAR-100 tables).

Written from the papers' architecture descriptions, with the widths and depths those
benchmarks use, so parameter counts match theirs. Every model takes the common signature
`(num_classes, in_channels, image_size, ...)`, ends in global average pooling, and runs on
inputs from 8x8 up. Activations are never in-place, so an output captured by a feature tap
(`kdcli.models.features.FeatureTap`) is never overwritten by the next layer.

- resnet.py       ResNet for CIFAR (He et al. 2016): resnet8 ... resnet110, resnet8x4,
                  resnet32x4; the bottleneck ResNet-50 with a CIFAR stem (resnet50_cifar)
- wrn.py          Wide ResNets (Zagoruyko & Komodakis 2016): wrn_16_1 ... wrn_40_2
- vgg.py          VGG with batch norm (Simonyan & Zisserman 2015), no fully connected stack
- mobilenetv2.py  MobileNetV2 (Sandler et al. 2018), the half-width CIFAR variant
- shufflenet.py   ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018)
"""
