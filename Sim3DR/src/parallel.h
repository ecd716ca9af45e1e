// Sim3DR internals: a persistent worker pool and phased jobs of independent tasks.
//
// A job is a short list of phases, each a number of independent tasks (bands of an
// image, ranges of vertices, chunks of triangles). The calling thread and the pool
// workers given to the job claim tasks with an atomic counter; a participant that finds
// no task left in a phase waits until every task of that phase has finished before it
// claims tasks of the next one. Nobody waits for a participant as such: the caller can
// finish a job alone (a worker that arrives late finds nothing to do), so a job never
// depends on how many threads really join it, how fast they wake up, or whether other
// jobs (concurrent callers) keep the workers busy. Results never depend on who ran a task.
//
// The pool is created on first use, grows to the most helpers a call has asked for and
// keeps its threads for later calls (starting threads per call cost more than the work
// on small meshes). When the OS refuses a thread, calls go on with the threads that
// exist. A forked child starts a new pool (the parent's threads do not exist there).
// A task's exception (std::bad_alloc) is rethrown on the calling thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <initializer_list>
#include <mutex>

namespace sim3dr {
namespace detail {

constexpr int kMaxPhases = 4;

class Job {
public:
    using TaskFn = void (*)(void* ctx, int phase, int task);

    Job(TaskFn fn, void* ctx) : fn_(fn), ctx_(ctx) {}
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

    // Appends a phase of n >= 0 tasks (before the job runs).
    void add_phase(int n);
    // Runs tasks until every phase is done (or the job failed). Never throws.
    void participate() noexcept;
    // Rethrows the first exception a task raised (on the calling thread).
    void rethrow_if_failed();

    // Pool bookkeeping (guarded by the pool's mutex).
    Job* next_in_queue = nullptr;
    int slots = 0;   // workers that may still join
    std::atomic<int> active{0};  // workers inside participate() (changed under the pool's mutex)
    bool queued = false;

private:
    void finish_task(int phase) noexcept;
    void wait_phase(int phase) noexcept;

    TaskFn fn_;
    void* ctx_;
    int nphases_ = 0;
    int ntasks_[kMaxPhases] = {0, 0, 0, 0};
    std::atomic<int> next_[kMaxPhases] = {};
    std::atomic<int> done_[kMaxPhases] = {};
    std::atomic<bool> failed_{false};
    std::exception_ptr error_;
    std::atomic<int> sleepers_{0};
    std::mutex m_;  // error_ and sleeping waiters
    std::condition_variable cv_;
};

// Runs `job` on the calling thread plus up to `threads - 1` pool workers and returns the
// number of threads the job was planned over (the caller plus the workers available to
// it: fewer when the OS refuses to start threads or set_thread_start_limit says so).
// Rethrows a task's exception.
int run_job(Job& job, int threads);

// The widest SIMD level the kernels may use now (see set_simd_level in rasterize.h).
int simd_level();

// Convenience: run f(phase, task) over phases of the given task counts.
template <class F>
int run_phases(int threads, std::initializer_list<int> phases, F& f) {
    Job job([](void* ctx, int phase, int task) { (*static_cast<F*>(ctx))(phase, task); }, &f);
    for (int n : phases) job.add_phase(n);
    return run_job(job, threads);
}

}  // namespace detail
}  // namespace sim3dr
