// train_resnet.cpp for CIFAR-10: the same network taking 3 x 32 x 32 images, reading CIFAR-10's binary files
// by default (--data DIR, the folder cifar-10-batches-bin).
#define PNN_EXAMPLE_CIFAR10
#include "train_resnet.cpp"
