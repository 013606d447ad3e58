// Warp collectives as rendezvous: lanes match on (op, mask) like PTX .sync instructions; the last lane to arrive
// computes every lane's result. Also __activemask and yields. Errors name the offending lane's thread.
#include <string>

#include "emu/block_runner.h"
#include "q35/emu/control.h"

namespace q35::simt {

void BlockRunner::collective_arrive(const CollectiveOp& op, uint32_t mask, void* args, Site site) {
  Fiber& f = *running_;
  const unsigned lane = f.ctx.lane;
  const uint32_t bit = 1u << lane;
  WarpState& w = warps_[f.ctx.warp];
  if (!(mask & bit)) {
    fail(f, std::string(op.name) + " at " + site_str(site) + ": the calling lane " + std::to_string(lane) +
                " is not in its mask " + hex_mask(mask));
  }
  if (!op.exited_lanes_allowed) {
    if (const uint32_t absent = mask & ~w.present) {
      fail(f, std::string(op.name) + "(mask=" + hex_mask(mask) + ") at " + site_str(site) + " names lanes " +
                  lane_list(absent) + " that do not exist (warp " + std::to_string(f.ctx.warp) + " has lanes " +
                  lane_list(w.present) + ")");
    }
    if (const uint32_t dead = mask & w.exited) {
      fail(f, std::string(op.name) + "(mask=" + hex_mask(mask) + ") at " + site_str(site) + " names lanes " +
                  lane_list(dead) + " that have exited");
    }
  }
  Collective* c = nullptr;
  for (unsigned i = 0; i < w.num_pending; ++i) {
    if (w.pending[i].op == &op && w.pending[i].mask == mask) {
      c = &w.pending[i];
      break;
    }
  }
  if (!c) {
    c = &w.pending[w.num_pending++];
    c->op = &op;
    c->mask = mask;
    c->arrived = 0;
    c->site = site;
  }
  c->args[lane] = args;
  c->arrived |= bit;
  const uint32_t need = mask & w.present & ~w.exited;
  if ((c->arrived & need) == need) {
    complete_collective(w, static_cast<unsigned>(c - w.pending), f.ctx.warp);
    return;
  }
  block_running(WaitKind::kCollective, site, op.name, mask);
}

void BlockRunner::complete_collective(WarpState& w, unsigned index, unsigned warp_index) {
  Collective& c = w.pending[index];
  for (uint32_t m = c.mask & ~c.arrived; m; m &= m - 1) c.args[__builtin_ctz(m)] = nullptr;
  c.op->compute(c.args, c.mask, c.arrived);
  for (uint32_t m = c.arrived; m; m &= m - 1) {
    Fiber& g = *fibers_[warp_index * kWarpLanes + static_cast<unsigned>(__builtin_ctz(m))];
    if (g.state == FiberState::kBlocked) wake(g);
  }
  ++stats_.collectives;
  w.pending[index] = w.pending[--w.num_pending];
}

uint32_t BlockRunner::active_mask(Site site) {
  Fiber& f = *running_;
  warps_[f.ctx.warp].activemask_waiting |= 1u << f.ctx.lane;
  block_running(WaitKind::kActiveMask, site, "__activemask()", 0);
  return f.activemask_result;
}

namespace {
BlockRunner& runner_in_kernel(const char* what) {
  BlockRunner* r = active_runner();
  if (!r || !r->in_fiber()) throw Error(std::string("qwen35_native emulator: ") + what + " called outside a kernel");
  return *r;
}
}  // namespace

void warp_collective(const CollectiveOp& op, uint32_t mask, void* my_args, Site site) {
  runner_in_kernel(op.name).collective_arrive(op, mask, my_args, site);
}

uint32_t warp_active_mask(Site site) { return runner_in_kernel("__activemask").active_mask(site); }

void yield_thread() { runner_in_kernel("__nanosleep").yield_running(); }

}  // namespace q35::simt
