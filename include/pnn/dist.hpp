// pnn/dist.hpp: the parallel strategies and the in-process communicator, in one include.
// The MPI communicator needs <mpi.h>: include <pnn/dist/mpi.hpp> separately where MPI is available.
#pragma once

#include "pnn/dist/communicator.hpp"
#include "pnn/dist/data_parallel.hpp"
#include "pnn/dist/distributed.hpp"
#include "pnn/dist/local.hpp"
#include "pnn/dist/pipeline.hpp"
#include "pnn/dist/rank_threads.hpp"
#include "pnn/dist/schedule.hpp"
#include "pnn/dist/strategy.hpp"
#include "pnn/dist/strategy_rank.hpp"
