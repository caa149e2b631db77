/**
 * Node flags the agent daemon runs with: the same list in systemd/starling.service's ExecStart
 * (a unit test compares them) and in every agent process the CLI starts (demo, tests, benches).
 *
 * --lite-mode: V8 without its optimising and baseline compilers (it implies --jitless) and with
 * the memory-saving heap settings. An idle agent's work is a few frames and timers per second,
 * where the interpreter costs nothing measurable (bench:mesh: same idle CPU), while the resident
 * set drops by about a quarter (bench:mesh, 10 agents: about 85 to 64 MiB). The price is heavy
 * computation: the membership core of a 200-host simulation runs about 3x slower interpreted,
 * which for one agent's share of a large cluster stays a fraction of a percent of a core.
 *
 * --no-expose-wasm: WebAssembly is already off under --lite-mode (--jitless leaves V8 no
 * compiler for it; nothing in the agent uses it), but V8 turns its default-on --expose-wasm off
 * with "Warning: disabling flag --expose_wasm due to conflicting flags" on stderr, into the
 * journal at every start. Saying it explicitly gives the same V8 without the warning (one idle
 * agent: RSS 62.1 MiB before, 61.7 MiB after; 74-83 MiB with no flags).
 */
export const AGENT_NODE_ARGS: readonly string[] = Object.freeze(['--lite-mode', '--no-expose-wasm'])

/**
 * The argument list of an agent process: AGENT_NODE_ARGS, then extra flags (the
 * STARLING_NODE_ARGS environment variable, space-separated, e.g. for profiling; later flags win),
 * then the CLI entry and its arguments.
 */
export function agentSpawnArgs (entry: string, args: readonly string[], extra = process.env.STARLING_NODE_ARGS ?? ''): string[] {
  return [...AGENT_NODE_ARGS, ...extra.split(' ').filter(a => a !== ''), entry, ...args]
}
