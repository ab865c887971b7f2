// pnn/cuda/nccl_mpi.cuh: NcclMpi, the NCCL communicator for processes launched by mpirun, one GPU each.
//
//   mpirun -np 4 ./train_cnn_cuda_data_parallel_nccl   with   DataParallel<pnn::NcclMpi>
//
// Rank 0 creates NCCL's unique ids and MPI broadcasts them (MPI only bootstraps; all data then moves
// through NCCL). Each process takes the GPU numbered by its rank among the processes on its node, modulo
// the GPUs it sees (one each where the launcher sets CUDA_VISIBLE_DEVICES per process); two processes of
// a node on one GPU are refused on every rank, since NCCL runs one rank per GPU. Include this header only
// where MPI was found: it includes <mpi.h> through pnn/dist/mpi.hpp. A failing rank prints its message and makes mpirun
// stop every rank, as with Mpi.
#pragma once

#include <cstring>
#include <vector>

#include "pnn/cuda/nccl.cuh"
#include "pnn/dist/mpi.hpp"

namespace pnn {

class NcclMpi : public Nccl {
 public:
  explicit NcclMpi(CommunicatorOptions options = {}) : Nccl(bootstrap(options)) {}

  // Processes are ranks here: there is no in-process group of NcclMpi, so Distributed runs one rank per
  // process. (The inherited Nccl::group makes Nccl communicators, which tells Distributed as much. A deleted
  // NcclMpi::group would say it too, but nvcc's front end takes a deleted function for a callable one in a
  // requires-expression and picked the rank threads.)
  static std::string name() { return "Nccl over mpirun processes, one GPU each"; }

  // Prints the message and ends every rank (mpirun then stops the job).
  [[noreturn]] void abort(const std::string& message) {
    Nccl::abort(message);
    std::fprintf(stderr, "pnn: %s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
  }

 private:
  // NCCL refuses two ranks of one communicator on the same GPU, and says so only from inside
  // ncclCommInitRank ("invalid usage"), where the other ranks would wait for them. The ranks of a node
  // compare their GPUs' UUIDs (device numbers differ between processes that see different GPUs), and every
  // rank of the job throws if any node has two ranks on one GPU.
  static void refuse_shared_gpus(MPI_Comm node, int node_rank, int node_size, int device) {
    cudaDeviceProp properties{};
    PNN_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
    std::vector<char> uuids(sizeof(properties.uuid.bytes) * static_cast<std::size_t>(node_size));
    MPI_Allgather(properties.uuid.bytes, sizeof(properties.uuid.bytes), MPI_BYTE, uuids.data(),
                  sizeof(properties.uuid.bytes), MPI_BYTE, node);
    int sharing = -1;  // another rank of this node on this rank's GPU
    for (int other = 0; other < node_size && sharing < 0; ++other)
      if (other != node_rank && std::memcmp(uuids.data() + other * sizeof(properties.uuid.bytes), properties.uuid.bytes,
                                            sizeof(properties.uuid.bytes)) == 0)
        sharing = other;
    int any_shared = sharing >= 0 ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &any_shared, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    PNN_CHECK(any_shared == 0, ArgumentError, "NcclMpi: ",
              sharing >= 0 ? detail::concat("local ranks ", node_rank, " and ", sharing, " of this node's ", node_size,
                                            " processes would share one GPU (device ", device, " here)")
                           : std::string("two processes of another node would share a GPU"),
              "; NCCL runs one rank per GPU: start at most one process per GPU on each node");
  }

  static Setup bootstrap(const CommunicatorOptions& options) {
    mpi_detail::Environment::ensure();
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm node = MPI_COMM_NULL;
    PNN_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS,
              CommunicationError, "NcclMpi: MPI_Comm_split_type failed on rank ", rank);
    int node_rank = 0, node_size = 1;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    std::string reason;
    const int devices = cuda_device_count(&reason);
    PNN_CHECK(devices > 0, CudaError, "NcclMpi: rank ", rank, " sees no CUDA device (", reason, ")");
    const int device = node_rank % devices;
    PNN_CUDA_CHECK(cudaSetDevice(device));
    refuse_shared_gpus(node, node_rank, node_size, device);
    MPI_Comm_free(&node);

    // Rank 0 makes the ids; should that fail, the broadcast tells the others, who would otherwise wait.
    struct {
      std::array<ncclUniqueId, channel_count> ids;
      int made;
    } ids{};
    std::string failure;
    if (rank == 0) {
      try {
        for (auto& id : ids.ids) PNN_CUDA_CHECK(ncclGetUniqueId(&id));
        ids.made = 1;
      } catch (const std::exception& error) {
        failure = error.what();
      }
    }
    PNN_CHECK(MPI_Bcast(&ids, static_cast<int>(sizeof(ids)), MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
              CommunicationError, "NcclMpi: broadcasting NCCL's unique ids failed on rank ", rank);
    PNN_CHECK(ids.made == 1, CommunicationError, "NcclMpi: rank ", rank, ": ",
              rank == 0 ? failure : std::string("rank 0 could not create NCCL's unique ids (its message says why)"));
    std::array<ncclComm_t, channel_count> comms{};
    for (std::size_t c = 0; c < channel_count; ++c) PNN_CUDA_CHECK(ncclCommInitRank(&comms[c], size, ids.ids[c], rank));
    return Setup{comms, rank, size, device, options, std::make_shared<cuda_detail::NcclGroupState>()};
  }
};

static_assert(Communicator<NcclMpi>);

}  // namespace pnn
