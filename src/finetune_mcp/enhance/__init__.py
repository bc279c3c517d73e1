"""Student–teacher dataset enhancement (`enhance_dataset`): a student model answers, a teacher
gives hints where the student is wrong or uncertain, and the enhanced rows become training data.

Owns: `config` (the enhancement spec), `start` (its start checks and placement), `workflow` (the
worker body), `student` (the local student model), `teachers` (OpenAI-compatible and local
teachers, the judge), `keys` (which key may go to which endpoint), `answer_check` (deciding
whether an answer is right) and `outputs` (the enhanced dataset and its summary).
"""
