// Trains a small residual network (three stages of basic blocks, 16, 32 and 64 channels) on Fashion-MNIST, or,
// compiled with PNN_EXAMPLE_CIFAR10 (train_resnet_cifar10.cpp), on CIFAR-10's 32 x 32 colour images.
#include "training_program.hpp"
#include "models.hpp"

#if defined(PNN_EXAMPLE_CIFAR10)
using ResNet = examples::ResNetCifar10;
inline constexpr const char* resnet_description = "ResNet 16-32-64 for CIFAR-10";
inline constexpr const char* resnet_data_format = "cifar10";
#else
using ResNet = examples::ResNet;
inline constexpr const char* resnet_description = "ResNet 16-32-64";
inline constexpr const char* resnet_data_format = "mnist";
#endif

// Pipeline stages: the stem and first block, the two down-sampling stages, the head.
using ResNetStages = pnn::Split<5, 7>;

int main(int argc, char** argv) {
  return examples::run_training_program<ResNet, ResNetStages>(
      argc, argv, resnet_description,
      {.epochs = 1, .batch = 64, .learning_rate = 0.05, .data_format = resnet_data_format});
}
