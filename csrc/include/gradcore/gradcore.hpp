// The whole public C++ API of gradcore.
#pragma once

#include "gradcore/cuda.hpp"
#include "gradcore/dense.hpp"
#include "gradcore/dropout.hpp"
#include "gradcore/export.hpp"
#include "gradcore/normalization.hpp"
#include "gradcore/norms.hpp"
#include "gradcore/optim.hpp"
#include "gradcore/rnn.hpp"
#include "gradcore/runtime.hpp"
#include "gradcore/tensor.hpp"
