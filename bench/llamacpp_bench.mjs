// llamacpp_bench.mjs — llama.cpp's speed on a GGUF file, through node-llama-cpp
// (installed in tests/llamacpp; its prebuilt CPU backends pick the variant for
// this CPU, e.g. zen4). Measures what llama-bench calls pp128 and tg32:
//
//   node bench/llamacpp_bench.mjs MODEL.gguf [threads=2] [pp=128] [tg=32] [reps=5]
//   -> {"pp_tok_s":..,"tg_tok_s":..,"threads":2,"pp":128,"tg":32}
//
// pp: one batch of `pp` random token ids evaluated from an empty context
//     (logits of the last token only, as llama-bench);
// tg: `tg` single-token decode steps from an empty context, greedy sampling
//     (node-llama-cpp's generator; a little JS overhead per step is included).
// Each figure is the best of `reps` runs after a warm-up run.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "tests", "llamacpp", "package.json"));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(require.resolve("node-llama-cpp")).href);

const [, , modelPath, thrArg, ppArg, tgArg, repArg] = process.argv;
if (!modelPath) {
    console.error("usage: node bench/llamacpp_bench.mjs MODEL.gguf [threads] [pp] [tg] [reps]");
    process.exit(2);
}
const threads = Number(thrArg ?? 2), pp = Number(ppArg ?? 128), tg = Number(tgArg ?? 32);
const reps = Number(repArg ?? 5);

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
const context = await model.createContext({
    contextSize: 512, batchSize: 512, threads, flashAttention: false,
});
const seq = context.getSequence();
// random ids among the first 20000 (ordinary tokens of a byte-level BPE vocab)
let x = 12345;
const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) % 20000) + 300;
const promptTokens = Array.from({ length: pp }, rnd);

const now = () => Number(process.hrtime.bigint()) / 1e9;
let bestPP = Infinity, bestTG = Infinity;
for (let r = 0; r <= reps; r++) {
    await seq.clearHistory();
    let t0 = now();
    await seq.evaluateWithoutGeneratingNewTokens(promptTokens);
    const dpp = now() - t0;
    await seq.clearHistory();
    t0 = now();
    let n = 0;
    for await (const _t of seq.evaluate([promptTokens[0]], { temperature: 0 })) {
        if (++n >= tg) break;
    }
    const dtg = now() - t0;
    if (r > 0) { // r = 0 is the warm-up
        bestPP = Math.min(bestPP, dpp);
        bestTG = Math.min(bestTG, dtg);
    }
}
console.log(JSON.stringify({ pp_tok_s: +(pp / bestPP).toFixed(1), tg_tok_s: +(tg / bestTG).toFixed(1),
                             threads, pp, tg }));
await context.dispose();
await model.dispose();
await llama.dispose();
