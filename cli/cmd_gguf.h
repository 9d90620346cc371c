/* cmd_gguf.h — the GGUF subcommands (cmd_gguf.c): `export-gguf` and
 * `quantize`. Declared here rather than in cli.h so the GGUF work owns its
 * own header; cli/main.c includes it for its command table. */
#ifndef SMJ_CMD_GGUF_H
#define SMJ_CMD_GGUF_H

int cmd_export_gguf(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
