// A small classification Dataset of random bytes and labels, for tests of the training loop.
#pragma once

#include <array>
#include <cstdint>
#include <pnn/pnn.hpp>

namespace pnn::testing {

// `samples` images of `sample_shape` (channels, height, width) and labels in [0, classes), drawn from `seed`:
// every byte, then every label, from one Generator.
inline Dataset random_dataset(index samples, std::array<index, 3> sample_shape, index classes, std::uint64_t seed) {
  Dataset data;
  data.images = Tensor<std::uint8_t, 2>(Extents<2>{samples, sample_shape[0] * sample_shape[1] * sample_shape[2]});
  data.labels = Tensor<std::int32_t, 1>(Extents<1>{samples});
  data.sample_shape = sample_shape;
  data.classes = classes;
  Generator random(seed);
  for (index i = 0; i < data.images.size(); ++i) data.images.data()[i] = static_cast<std::uint8_t>(random.next());
  for (index i = 0; i < samples; ++i)
    data.labels[i] = static_cast<std::int32_t>(random.next() % static_cast<std::uint64_t>(classes));
  return data;
}

}  // namespace pnn::testing
