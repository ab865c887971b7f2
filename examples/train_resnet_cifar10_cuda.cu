// train_resnet_cifar10.cpp with the model on the GPU (see train_resnet_cuda.cu).
#define PNN_EXAMPLE_CUDA
#define PNN_EXAMPLE_CIFAR10
#include "train_resnet.cpp"
