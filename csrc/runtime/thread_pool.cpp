#include "runtime/thread_pool.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gradcore/runtime.hpp"

namespace gradcore::runtime {
namespace {

// Below this many elements a single thread finishes before a sleeping worker wakes.
constexpr std::int64_t kMinParallelWork = 1 << 16;

int cpus_available() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
    return std::max(1u, std::thread::hardware_concurrency());
}

// More threads than any machine's cores only costs memory and start-up time; a larger
// request is a mistake (100000 threads exhaust the process limits).
constexpr long kMaxThreads = 1024;

int initial_threads() {
    if (const char* env = std::getenv("GRADCORE_NUM_THREADS")) {
        char* end = nullptr;
        const long n = std::strtol(env, &end, 10);
        if (end != env && *end == '\0' && n >= 1 && n <= kMaxThreads) return static_cast<int>(n);
    }
    return cpus_available();
}

thread_local bool t_inside_pool = false;

class Pool {
   public:
    static Pool& get() {
        // Leaked on purpose: workers may still be parked at process exit, and joining
        // them from a static destructor after Python finalised is asking for trouble.
        static Pool* pool = new Pool();
        return *pool;
    }

    int threads() const { return threads_.load(std::memory_order_relaxed); }

    void set_threads(int n) {
        std::lock_guard<std::mutex> busy(busy_);
        stop_workers();
        threads_.store(n, std::memory_order_relaxed);
    }

    void run(std::size_t n_tasks, TaskFn fn) {
        const int k = static_cast<int>(std::min<std::size_t>(threads(), n_tasks));
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (k <= 1 || t_inside_pool || !busy.owns_lock()) {
            for (std::size_t i = 0; i < n_tasks; ++i) fn(i);
            return;
        }
        start_workers(k - 1);
        bool wake = false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &fn;
            n_tasks_ = n_tasks;
            next_.store(0, std::memory_order_relaxed);
            helpers_running_.store(k - 1, std::memory_order_relaxed);
            helpers_wanted_.store(k - 1, std::memory_order_release);
            wake = sleepers_ > 0;
        }
        if (wake) wake_.notify_all();
        t_inside_pool = true;
        work(fn);
        t_inside_pool = false;
        // The helpers are usually done by now: spin briefly before sleeping.
        if (!spin_until([&] { return helpers_running_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return helpers_running_.load(std::memory_order_acquire) == 0; });
        }
        job_ = nullptr;
    }

    void forget_workers_after_fork() {
        // The child has only the forking thread: the old workers and any held locks are
        // gone. Leak their std::thread objects (destroying them would terminate) and
        // rebuild the synchronisation objects in place.
        workers_.release_all();
        new (&busy_) std::mutex();
        new (&mutex_) std::mutex();
        new (&wake_) std::condition_variable();
        new (&done_) std::condition_variable();
        job_ = nullptr;
        helpers_wanted_.store(0);
        helpers_running_.store(0);
        sleepers_ = 0;
        stopping_.store(false);
    }

   private:
    struct Workers {
        std::vector<std::thread*> list;
        void release_all() { list.clear(); }
    };

    Pool() : threads_(initial_threads()) {
        pthread_atfork(nullptr, nullptr, [] { Pool::get().forget_workers_after_fork(); });
    }

    // Spins for up to kSpinMicros waiting for done(); false if it gave up. Waking a
    // sleeping thread costs tens of microseconds on a VM, more than a small kernel
    // takes, while back-to-back kernels (pack, then compute; forward, then backward)
    // follow each other within microseconds. The spin is short so that an idle pool
    // does not take cores from NumPy's or PyTorch's threads.
    template <class Done>
    static bool spin_until(Done&& done) {
        constexpr auto kSpinMicros = std::chrono::microseconds(100);
        const auto start = std::chrono::steady_clock::now();
        for (unsigned i = 1;; ++i) {
            if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpinMicros) return false;
        }
    }

    void work(TaskFn fn) {
        for (;;) {
            const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n_tasks_) break;
            fn(i);
        }
    }

    void start_workers(int wanted) {
        while (static_cast<int>(workers_.list.size()) < wanted) {
            workers_.list.push_back(new std::thread([this] { worker_loop(); }));
        }
    }

    void stop_workers() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_.store(true);
        }
        wake_.notify_all();
        for (std::thread* t : workers_.list) {
            t->join();
            delete t;
        }
        workers_.list.clear();
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_.store(false);
    }

    bool try_claim() {
        int w = helpers_wanted_.load(std::memory_order_acquire);
        while (w > 0) {
            if (helpers_wanted_.compare_exchange_weak(w, w - 1, std::memory_order_acq_rel)) return true;
        }
        return false;
    }

    // A worker claims one helper slot of the posted job, runs tasks until none are
    // left, and reports back; between jobs it spins briefly, then sleeps. Waiting on
    // the slot count (not on a generation counter) means a worker that starts after a
    // job was posted still joins it.
    void worker_loop() {
        t_inside_pool = true;
        for (;;) {
            if (!spin_until([&] { return stopping_.load(std::memory_order_relaxed) || try_claim(); })) {
                std::unique_lock<std::mutex> lock(mutex_);
                ++sleepers_;
                wake_.wait(lock, [&] {
                    return stopping_.load(std::memory_order_relaxed) ||
                           helpers_wanted_.load(std::memory_order_relaxed) > 0;
                });
                --sleepers_;
                continue;  // claim (or stop) at the top
            }
            if (stopping_.load(std::memory_order_relaxed)) return;
            work(*job_);
            if (helpers_running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);
                done_.notify_one();
            }
        }
    }

    std::atomic<int> threads_;
    std::mutex busy_;  // held by the one caller that owns the workers right now
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    Workers workers_;
    const TaskFn* job_ = nullptr;
    std::size_t n_tasks_ = 0;
    std::atomic<std::size_t> next_{0};
    std::atomic<int> helpers_wanted_{0};
    std::atomic<int> helpers_running_{0};
    int sleepers_ = 0;  // guarded by mutex_
    std::atomic<bool> stopping_{false};
};

}  // namespace

int threads_for_caller() { return t_inside_pool ? 1 : Pool::get().threads(); }

void parallel_for(std::size_t n_tasks, std::int64_t work_items, TaskFn fn) {
    if (n_tasks == 0) return;
    if (n_tasks == 1 || work_items < kMinParallelWork) {
        for (std::size_t i = 0; i < n_tasks; ++i) fn(i);
        return;
    }
    Pool::get().run(n_tasks, fn);
}

}  // namespace gradcore::runtime

namespace gradcore {

void set_num_threads(int n) {
    if (n < 1 || n > runtime::kMaxThreads) {
        throw std::invalid_argument("number of threads must be in [1, " + std::to_string(runtime::kMaxThreads) +
                                    "], got " + std::to_string(n));
    }
    runtime::Pool::get().set_threads(n);
}

int get_num_threads() { return runtime::Pool::get().threads(); }

}  // namespace gradcore
