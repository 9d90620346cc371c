/* main.c — entry point of the `smedjan` program: picks the subcommand.
 *
 *   smedjan <command> [--flags]       run a command
 *   smedjan <command> --help          its flags
 *   smedjan help [command]            the list of commands, or one's help
 *   smedjan --version
 *
 * The typical pipeline is tokenizer -> prepare -> train -> generate; the
 * others inspect (info, sizes), measure (perplexity, bench).
 */
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "cmd_gguf.h"
#include "cmd_hf.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_entry;

static const command_entry commands[] = {
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer on a text file"},
    {"prepare", cmd_prepare, "tokenize a text file into a training (and validation) dataset"},
    {"train", cmd_train, "train a model on a prepared dataset (checkpoints, resume, validation)"},
    {"generate", cmd_generate, "sample text from a trained model"},
    {"perplexity", cmd_perplexity, "measure a model's loss, perplexity and bits per byte on a text"},
    {"info", cmd_info, "show the config and tensors of a checkpoint or training state"},
    {"sizes", cmd_sizes, "list the model presets with parameter counts and memory"},
    {"bench", cmd_bench, "measure training, forward and decoding speed"},
    {"import-hf", cmd_import_hf, "convert a HuggingFace model directory into a checkpoint"},
    {"export-hf", cmd_export_hf, "write a checkpoint (and tokenizer) as a HuggingFace model directory"},
    {"export-gguf", cmd_export_gguf, "write a checkpoint and its tokenizer as a GGUF file llama.cpp runs"},
    {"quantize", cmd_quantize, "quantize a checkpoint to GGUF q8_0/q4_0 (smedjan's quantized format)"},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void print_usage(FILE *f) {
    fprintf(f,
            "smedjan %s — train and run small language models from raw text\n\n"
            "usage: smedjan <command> [--flags]\n\ncommands:\n",
            SMJ_VERSION_STRING);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\n'smedjan <command> --help' lists a command's flags.\n"
            "example:\n"
            "  smedjan tokenizer --input corpus.txt --vocab-size 4096 --output tok.bin\n"
            "  smedjan prepare --input corpus.txt --tokenizer tok.bin --output train.bin \\\n"
            "                  --val-output val.bin --doc-separator '\\n\\n'\n"
            "  smedjan train --dataset train.bin --tokenizer tok.bin --val-dataset val.bin\n"
            "  smedjan generate --checkpoint checkpoints/model.ckpt --tokenizer tok.bin "
            "--prompt 'Once'\n");
}

static const command_entry *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            print_usage(stdout);
            return 0;
        }
        const command_entry *c = find_command(argv[2]);
        if (!c) {
            fprintf(stderr, "smedjan: unknown command '%s' (see 'smedjan --help')\n", argv[2]);
            return 2;
        }
        char *help_argv[] = {argv[2], "--help", NULL};
        return c->run(2, help_argv);
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("smedjan %s\n", SMJ_VERSION_STRING);
        return 0;
    }
    const command_entry *c = find_command(name);
    if (!c) {
        fprintf(stderr, "smedjan: unknown command '%s' (see 'smedjan --help')\n", name);
        return 2;
    }
    return c->run(argc - 1, argv + 1);
}
