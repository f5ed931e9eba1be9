/* Greedy generation through prima's C ABI: prints the generated token ids
 * on stdout (space-separated) and the text on stderr.
 * Usage: generate MODEL PROMPT N_PREDICT */
#include <stdio.h>
#include <stdlib.h>
#include "prima.h"

static bool on_token(void *user, uint32_t id, const char *text, size_t len) {
    int *count = user;
    printf("%s%u", *count ? " " : "", id);
    fwrite(text, 1, len, stderr);
    (*count)++;
    return true;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT N_PREDICT\n", argv[0]);
        return 2;
    }
    char err[512];
    PrimaModel *model = NULL;
    PrimaStatus st = prima_model_load(argv[1], 1, &model, err, sizeof err);
    if (st != PRIMA_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)st, err);
        return 1;
    }
    uint32_t ids[256];
    size_t n_ids = 0;
    st = prima_tokenize(model, argv[2], ids, 256, &n_ids, err, sizeof err);
    if (st != PRIMA_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)st, err);
        prima_model_free(model);
        return 1;
    }
    fprintf(stderr, "prompt: %zu tokens\n", n_ids);
    int count = 0;
    st = prima_generate(model, argv[2], (uint32_t)atoi(argv[3]), 512, 0.0f, 1, on_token, &count, err, sizeof err);
    printf("\n");
    prima_model_free(model);
    if (st != PRIMA_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)st, err);
        return 1;
    }
    return 0;
}
