"""The gRPC servicers, in grpc's ``greeter_server.py`` shape: request in -> one core call -> one ``pack_*`` out.

Each method picks the table the request names, calls the core function that answers it
(query.py, tokenizer_table.py, gensim_ops.py, gensim_eval.py; they validate, choose any fast path
and return arrays) and hands the arrays to the ``pack_*`` of its response type (pack.py). Nothing
here catches exceptions: the call guard around every handler (call_guard.py) turns them into
statuses through the one map in errors.py.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_client.wire import POLICY_NAMES

from embserve_server import embed, gensim_eval, gensim_ops, query, tokenizer_table
from embserve_server.config import Limits
from embserve_server.pack import (
    Encoded,
    embed_options_of,
    floats,
    keys_of,
    label_changes,
    pack_centrality,
    pack_closer_than,
    pack_cosmul,
    pack_embed,
    pack_list_keys,
    pack_list_tables,
    pack_lookup,
    pack_lookup_text,
    pack_reload,
    pack_search,
    pack_set_labels,
    pack_similarity,
    pack_tokenize,
    pack_word_analogies,
    pack_word_pairs,
    queries_of,
    search_options_of,
)
from embserve_server.registry import TableRegistry

Context: TypeAlias = grpc.ServicerContext



class EmbeddingService(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, registry: TableRegistry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits

    def ListTables(self, request: pb.ListTablesRequest, context: Context) -> pb.ListTablesResponse:
        return pack_list_tables(self.registry)

    def Lookup(self, request: pb.LookupRequest, context: Context) -> Encoded:
        table = self.registry.get(request.table, request.version, request.version_label)
        rows = query.lookup(
            table, self.limits, keys=keys_of(request, self.limits), ids=request.ids, missing=POLICY_NAMES.get(request.missing, "?"),
            normalize=request.normalize,
        )
        return pack_lookup(table, rows)

    def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_search(table, query.search(table, queries_of(request), search_options_of(request), self.limits))

    def Similarity(self, request: pb.SimilarityRequest, context: Context) -> pb.SimilarityResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_similarity(table, query.similarity(table, request.a, request.b, self.limits))

    def Tokenize(self, request: pb.TokenizeRequest, context: Context) -> pb.TokenizeResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        texts = list(request.texts)
        return pack_tokenize(table, tokenizer_table.tokenize(table, texts, self.limits, add_special_tokens=request.add_special_tokens))

    def LookupText(self, request: pb.LookupTextRequest, context: Context) -> pb.LookupTextResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        rows = tokenizer_table.lookup_text(table, request.text, self.limits, add_special_tokens=request.add_special_tokens, mean=request.mean)
        return pack_lookup_text(table, rows)

    def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_embed(table, embed.embed(table, self.limits, **embed_options_of(request)))

    # -- gensim KeyedVectors support (gensim_ops / gensim_eval) ----------------------------------

    def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_list_keys(table, gensim_ops.list_keys(table, request.offset, request.limit, self.limits))

    def MostSimilarCosmul(self, request: pb.MostSimilarCosmulRequest, context: Context) -> pb.MostSimilarCosmulResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        answer = gensim_ops.most_similar_cosmul(
            table, list(request.positive), list(request.negative), floats(request.positive_vectors, "positive_vectors"),
            floats(request.negative_vectors, "negative_vectors"), request.topn, self.limits,
        )
        return pack_cosmul(table, answer)

    def RankByCentrality(self, request: pb.RankByCentralityRequest, context: Context) -> pb.RankByCentralityResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_centrality(table, gensim_ops.rank_by_centrality(table, list(request.keys), not request.raw, self.limits))

    def CloserThan(self, request: pb.CloserThanRequest, context: Context) -> pb.CloserThanResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        return pack_closer_than(table, gensim_ops.closer_than(table, request.key1, request.key2, self.limits), count_only=request.count_only)

    def EvaluateWordPairs(self, request: pb.EvaluateWordPairsRequest, context: Context) -> pb.EvaluateWordPairsResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        answer = gensim_eval.word_pairs(table, list(request.a), list(request.b), request.restrict_vocab, request.case_insensitive, self.limits)
        return pack_word_pairs(table, answer)

    def EvaluateWordAnalogies(self, request: pb.EvaluateWordAnalogiesRequest, context: Context) -> pb.EvaluateWordAnalogiesResponse:
        table = self.registry.get(request.table, request.version, request.version_label)
        questions = [list(request.a), list(request.b), list(request.c), list(request.expected)]
        answer = gensim_eval.word_analogies(
            table, questions, request.restrict_vocab, request.case_insensitive, self.limits, approximate=request.approximate, ef_search=request.ef_search
        )
        return pack_word_analogies(table, answer)


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, registry: TableRegistry) -> None:
        self.registry = registry

    def Reload(self, request: pb.ReloadRequest, context: Context) -> pb.ReloadResponse:
        return pack_reload(self.registry.reload(request.table or None), self.registry)

    def SetLabels(self, request: pb.SetLabelsRequest, context: Context) -> pb.SetLabelsResponse:
        name = request.table or self.registry.default_name()
        return pack_set_labels(name, self.registry.set_labels(name, label_changes(request)))
