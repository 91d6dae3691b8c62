// A small persistent pool of std::threads shared by every kernel of the library.
//
// Why not OpenMP: gradcore is meant to be embedded next to NumPy's BLAS pool and
// PyTorch's (its own libgomp copy); a second OpenMP runtime in the process brings
// oversubscription, fork hazards and wheel-repair trouble. Our needs are simple:
// "run tasks 0..n-1 on up to k threads, caller included", with fixed results.
//
// Behaviour that makes it safe to embed:
// - A call from inside a pool task, or while another thread holds the pool (many Python
//   threads calling kernels at once with the GIL released), runs serially on the
//   calling thread instead of waiting: no deadlock, no oversubscription.
// - After fork() the child starts with no workers and creates new ones on first use.
// - Results never depend on which thread ran which task: callers write each task's
//   result to its own slot and combine slots in order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace gradcore::runtime {

class TaskFn {
   public:
    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, TaskFn>>>
    TaskFn(F& f) : object_(&f), call_([](void* o, std::size_t i) { (*static_cast<F*>(o))(i); }) {}
    void operator()(std::size_t i) const { call_(object_, i); }

   private:
    void* object_;
    void (*call_)(void*, std::size_t);
};

// The threads a kernel called from this thread would get: 1 inside a pool task (a
// nested parallel_for runs serially there), else get_num_threads().
int threads_for_caller();

// Runs fn(i) for every i in [0, n_tasks). Uses one thread when work_items (a hint of
// the total cost, in elements) is too small to pay for waking workers.
void parallel_for(std::size_t n_tasks, std::int64_t work_items, TaskFn fn);

}  // namespace gradcore::runtime
