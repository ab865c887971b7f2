// Trains a small convolutional network on Fashion-MNIST:
// conv 5x5 1->16 pad 2, ReLU, maxpool 2, conv 5x5 16->32 pad 2, ReLU, maxpool 2, dense 128, ReLU, dense 10.
#include "training_program.hpp"

using Cnn = pnn::Sequential<pnn::Input<1, 28, 28>, pnn::Conv2D<16, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>,
                            pnn::Conv2D<32, 5, pnn::Pad<2>>, pnn::ReLU, pnn::MaxPool2D<2>, pnn::Flatten,
                            pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;

// Pipeline stages: the first convolution block, the rest (the second block holds most of the work).
using CnnStages = pnn::Split<3>;

int main(int argc, char** argv) {
  return examples::run_training_program<Cnn, CnnStages>(argc, argv, "CNN conv16-conv32-dense128",
                                                        {.epochs = 1, .batch = 64, .learning_rate = 0.05});
}
