// train_resnet.cpp with the model on the GPU: the same network, command line and data (read on the host and
// copied to the device one batch at a time).
#define PNN_EXAMPLE_CUDA
#include "train_resnet.cpp"
