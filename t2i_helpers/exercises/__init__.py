"""exercises: checked exercises for every notebook, in the style of Kaggle Learn (`q1.check()`, `q1.hint()`,
`q1.solution()`).

The learner writes a small function or value where a notebook teaches the idea, to the contract the notebook
states; `check` runs it on fresh copies of test cases and says in one sentence what is wrong (never the expected
value), `hint` gives numbered hints and `solution` shows the reference, which lives here and not in the notebook.
An untouched stub is "not attempted" (a function that forgot `return` is told so) and nothing here raises, so
the notebooks run headless with every exercise unsolved. `problem` holds the `Exercise` class; `nb01` ... `nb07`
the exercises of each notebook, each with plausible wrong answers and correct variants in other styles;
`sandbox` the milvus-lite collection filter expressions are judged on; `python -m t2i_helpers.exercises
--self-test` checks every reference and variant passes and every wrong answer is caught. The top wing: it
imports the wings below.
"""
