"""A stand-in for llama-cpp-python that behaves like a build made for another CPU: it opens a model and
evaluates one token, but a batch of tokens dies with SIGILL — as an AMX build does on a VM whose kernel
does not grant AMX. Tests put this folder first on the worker's PYTHONPATH."""

import os
import signal

import numpy as np


class _Vocab:
    pass


class _Model:
    vocab = _Vocab()


class Llama:
    def __init__(self, model_path, **kwargs):
        self.metadata = {"tokenizer.chat_template": None}
        self.input_ids = np.zeros(4096, dtype=np.intc)
        self.n_tokens = 0
        self._model = _Model()

    def tokenize(self, text, add_bos=True, special=False):
        return list(range(1, len(text.split()) + 2))

    def detokenize(self, tokens, special=False):
        return b"x" * len(tokens)

    def token_bos(self):
        return 0

    def token_eos(self):
        return 1

    def n_ctx(self):
        return 4096

    def n_vocab(self):
        return 32

    def eval(self, tokens):
        if len(tokens) > 1:
            os.kill(os.getpid(), signal.SIGILL)
        self.n_tokens += len(tokens)


# the sampler API the studio's pipeline calls before evaluating the prompt
def llama_sampler_chain_default_params():
    return None


def llama_sampler_chain_init(params):
    return object()


def llama_sampler_chain_add(chain, sampler):
    pass


def llama_sampler_init_penalties(*args):
    return object()


def llama_sampler_init_greedy():
    return object()


def llama_sampler_init_top_k(k):
    return object()


def llama_sampler_init_temp(t):
    return object()


def llama_sampler_init_top_p(p, min_keep):
    return object()


def llama_sampler_init_min_p(p, min_keep):
    return object()


def llama_sampler_init_dist(seed):
    return object()


def llama_sampler_accept(chain, token):
    pass


def llama_sampler_free(chain):
    pass
