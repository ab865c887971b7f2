// examples/models.hpp: the example networks, one definition each, shared by the example programs
// (train_mlp.cpp, train_cnn.cpp, train_resnet.cpp and their twins), the benchmarks that time them
// (bench/layer_times.cpp) and the PyTorch interchange test (tests/io/pytorch_interop.cpp), whose
// torch.nn twins are in bench/pytorch_models.py and tests/io/check_pytorch_interop.py.
#pragma once

#include <pnn/pnn.hpp>

namespace examples {

// The multi-layer perceptron 784-256-128-10 with ReLU.
using Mlp = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;

// conv 5x5 1->16 pad 2, ReLU, maxpool 2, conv 5x5 16->32 pad 2, ReLU, maxpool 2, dense 128, ReLU, dense 10.
using Cnn = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;

// A basic block: two 3x3 convolutions with batch normalisation, added to its input.
template <pnn::index Channels>
using BasicBlock = pnn::Residual<pnn::Conv2D<Channels, 3, pnn::Pad<1>>, pnn::BatchNorm<>, pnn::ReLU,
                                 pnn::Conv2D<Channels, 3, pnn::Pad<1>>, pnn::BatchNorm<>>;

// The same, halving the resolution and changing the channel count, with a projection shortcut.
template <pnn::index Channels>
using DownsamplingBlock = pnn::Residual<pnn::Shortcut<pnn::Conv2D<Channels, 1, pnn::Stride<2>>, pnn::BatchNorm<>>,
                                        pnn::Conv2D<Channels, 3, pnn::Pad<1>, pnn::Stride<2>>, pnn::BatchNorm<>,
                                        pnn::ReLU, pnn::Conv2D<Channels, 3, pnn::Pad<1>>, pnn::BatchNorm<>>;

// A small residual network (three stages of blocks, 16, 32 and 64 channels) for square images of `Side`
// pixels (a multiple of 4: two stages halve it) with `Channels` channels.
template <pnn::index Channels, pnn::index Side>
using ResNetFor = pnn::Sequential<pnn::Input<Channels, Side, Side>, pnn::Conv2D<16, 3, pnn::Pad<1>>, pnn::BatchNorm<>,
                                  pnn::ReLU,                                                    // 16 x S x S
                                  BasicBlock<16>, pnn::ReLU, DownsamplingBlock<32>, pnn::ReLU,  // 32 x S/2 x S/2
                                  DownsamplingBlock<64>, pnn::ReLU,                             // 64 x S/4 x S/4
                                  pnn::AvgPool2D<Side / 4>, pnn::Flatten, pnn::Dense<10>>;
// Fashion-MNIST's 1 x 28 x 28 images, and CIFAR-10's 3 x 32 x 32.
using ResNet = ResNetFor<1, 28>;
using ResNetCifar10 = ResNetFor<3, 32>;

}  // namespace examples
