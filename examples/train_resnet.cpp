// Trains a small residual network (three stages of basic blocks, 16, 32 and 64 channels) on Fashion-MNIST, or,
// compiled with PNN_EXAMPLE_CIFAR10 (train_resnet_cifar10.cpp), on CIFAR-10's 32 x 32 colour images.
#include "training_program.hpp"

using namespace pnn;

// A basic block: two 3x3 convolutions with batch normalisation, added to its input.
template <pnn::index Channels>
using BasicBlock = Residual<Conv2D<Channels, 3, Pad<1>>, BatchNorm<>, ReLU, Conv2D<Channels, 3, Pad<1>>, BatchNorm<>>;

// The same, halving the resolution and changing the channel count, with a projection shortcut.
template <pnn::index Channels>
using DownsamplingBlock =
    Residual<Shortcut<Conv2D<Channels, 1, Stride<2>>, BatchNorm<>>, Conv2D<Channels, 3, Pad<1>, Stride<2>>, BatchNorm<>,
             ReLU, Conv2D<Channels, 3, Pad<1>>, BatchNorm<>>;

// For square images of `Side` pixels (a multiple of 4: two stages halve it) with `Channels` channels.
template <pnn::index Channels, pnn::index Side>
using ResNetFor = Sequential<Input<Channels, Side, Side>, Conv2D<16, 3, Pad<1>>, BatchNorm<>, ReLU,  // 16 x S x S
                             BasicBlock<16>, ReLU, DownsamplingBlock<32>, ReLU,                      // 32 x S/2 x S/2
                             DownsamplingBlock<64>, ReLU,                                            // 64 x S/4 x S/4
                             AvgPool2D<Side / 4>, Flatten, Dense<10>>;

#if defined(PNN_EXAMPLE_CIFAR10)
using ResNet = ResNetFor<3, 32>;
inline constexpr const char* resnet_description = "ResNet 16-32-64 for CIFAR-10";
inline constexpr const char* resnet_data_format = "cifar10";
#else
using ResNet = ResNetFor<1, 28>;
inline constexpr const char* resnet_description = "ResNet 16-32-64";
inline constexpr const char* resnet_data_format = "mnist";
#endif

// Pipeline stages: the stem and first block, the two down-sampling stages, the head.
using ResNetStages = Split<5, 7>;

int main(int argc, char** argv) {
  return examples::run_training_program<ResNet, ResNetStages>(
      argc, argv, resnet_description,
      {.epochs = 1, .batch = 64, .learning_rate = 0.05, .data_format = resnet_data_format});
}
