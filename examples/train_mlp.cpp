// Trains the multi-layer perceptron 784-256-128-10 with ReLU on Fashion-MNIST.
#include "training_program.hpp"

using Mlp = pnn::Sequential<pnn::Input<784>, pnn::Dense<256>, pnn::ReLU, pnn::Dense<128>, pnn::ReLU, pnn::Dense<10>>;

// Pipeline stages: the first Dense+ReLU, the rest.
using MlpStages = pnn::Split<2>;

int main(int argc, char** argv) {
  return examples::run_training_program<Mlp, MlpStages>(
      argc, argv, "MLP 784-256-128-10", {.epochs = 1, .batch = 64, .learning_rate = 0.001, .optimizer = "adam"});
}
