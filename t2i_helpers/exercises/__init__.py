"""exercises: checked exercises for every notebook, in the style of Kaggle Learn (`q1.check()`, `q1.hint()`,
`q1.solution()`).

The learner writes a small function or value where a notebook teaches the idea; `check` runs it on test cases
and says in one sentence what is wrong (never the expected value), `hint` gives numbered hints and `solution`
shows the reference, which lives here and not in the notebook. An untouched stub is "not attempted" and nothing
here raises, so the notebooks run headless with every exercise unsolved. `problem` holds the `Exercise` class;
`nb01` ... `nb05` the exercises of each notebook; `python -m t2i_helpers.exercises --self-test` checks every
reference solution passes and every typical wrong answer is caught. The top wing: it imports the wings below.
"""
