// greedy.mjs — runs a GGUF file in llama.cpp (through node-llama-cpp) and
// prints, as one JSON line on stdout, how llama.cpp tokenizes a prompt and
// the ids of its greedy continuation:
//
//   node greedy.mjs MODEL.gguf PROMPT N
//   -> {"prompt_tokens":[...],"tokens":[...N ids...]}
//
// PROMPT "@FILE" reads the prompt from FILE (UTF-8); N = 0 only tokenizes.
// Used by tests/test_gguf.c to check that llama.cpp reproduces smedjan's own
// tokenization and greedy decoding of an exported model. Token ids, not text,
// so the comparison is exact. The prompt is tokenized without BOS and without
// parsing special-token text (as smedjan's encoder does). The KV cache is
// kept in f32 and flash attention off so an f32 model is computed in f32.
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [, , modelPath, promptArg, nArg] = process.argv;
if (!modelPath || promptArg === undefined) {
    console.error("usage: node greedy.mjs MODEL.gguf PROMPT [N]");
    process.exit(2);
}
const n = Number(nArg ?? 32);
const prompt = promptArg.startsWith("@") ? readFileSync(promptArg.slice(1), "utf8") : promptArg;

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({
    contextSize: 256,
    batchSize: 256,
    threads: 2,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();
const promptTokens = model.tokenize(prompt, false);
const tokens = [];
if (n > 0) {
    for await (const t of sequence.evaluate(promptTokens, { temperature: 0 })) {
        tokens.push(t);
        if (tokens.length >= n) break;
    }
}
console.log(JSON.stringify({ prompt_tokens: promptTokens, tokens }));
await context.dispose();
await model.dispose();
await llama.dispose();
