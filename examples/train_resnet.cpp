// Trains a small residual network (three stages of basic blocks, 16, 32 and 64 channels) on Fashion-MNIST.
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

using ResNet = Sequential<Input<1, 28, 28>, Conv2D<16, 3, Pad<1>>, BatchNorm<>, ReLU,  // 16 x 28 x 28
                          BasicBlock<16>, ReLU, DownsamplingBlock<32>, ReLU,           // 32 x 14 x 14
                          DownsamplingBlock<64>, ReLU,                                 // 64 x 7 x 7
                          AvgPool2D<7>, Flatten, Dense<10>>;

// Pipeline stages: the stem and first block, the two down-sampling stages, the head.
using ResNetStages = Split<5, 7>;

int main(int argc, char** argv) {
  return examples::run_training_program<ResNet, ResNetStages>(argc, argv, "ResNet 16-32-64",
                                                              {.epochs = 1, .batch = 64, .learning_rate = 0.05});
}
