/* cmd_hf.h — the HuggingFace interop subcommands (cmd_hf.c):
 *   import-hf   a HF model directory (config.json + safetensors) -> checkpoint
 *   export-hf   a checkpoint (+ tokenizer) -> a HF model directory
 * Same shape as every subcommand in cli.h: argv[0] is the subcommand name,
 * the return value is the exit status (0, 1 runtime failure, 2 usage). */
#ifndef SMJ_CMD_HF_H
#define SMJ_CMD_HF_H

int cmd_import_hf(int argc, char **argv);
int cmd_export_hf(int argc, char **argv);

#endif
