"""Teachers for distillation, one file each, and the registry the config names them from.

A teacher is any retriever run on the *rewrite* of each turn (the seed paper, arXiv 2606.04650,
and DiSCo, arXiv 2410.14609). Its runs are computed once, stored as TREC run files and read back
(`convsparse.evaluation.metrics.write_trec_run` / `read_trec_run`, through ranx). Several
teachers are combined by `convsparse.training.fusion.average_runs`.

Adding a teacher is one file with a `Teacher` function and one entry in `TEACHERS`.
"""

from __future__ import annotations

from convsparse.training.teachers.base import Run, Teacher, TeacherInputs
from convsparse.training.teachers.bm25 import bm25_run, bm25_teacher
from convsparse.training.teachers.dense import dense_run, dense_teacher
from convsparse.training.teachers.llm import llm_run, llm_teacher
from convsparse.training.teachers.reranker import reranker_run, reranker_teacher
from convsparse.training.teachers.student import student_run, student_teacher

#: name (as written in `DistillConfig.teachers`) -> teacher
TEACHERS: dict[str, Teacher] = {
    "bm25": bm25_teacher,
    "dense": dense_teacher,
    "llm": llm_teacher,
    "reranker": reranker_teacher,
    "student": student_teacher,
}

__all__ = ["TEACHERS", "Run", "Teacher", "TeacherInputs", "bm25_run", "dense_run", "llm_run", "reranker_run",
           "student_run"]
