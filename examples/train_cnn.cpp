// Trains a small convolutional network on Fashion-MNIST:
// conv 5x5 1->16 pad 2, ReLU, maxpool 2, conv 5x5 16->32 pad 2, ReLU, maxpool 2, dense 128, ReLU, dense 10.
#include "training_program.hpp"
#include "models.hpp"

// Pipeline stages: the first convolution block, the rest (the second block holds most of the work).
using CnnStages = pnn::Split<3>;

int main(int argc, char** argv) {
  return examples::run_training_program<examples::Cnn, CnnStages>(argc, argv, "CNN conv16-conv32-dense128",
                                                                  {.epochs = 1, .batch = 64, .learning_rate = 0.05});
}
