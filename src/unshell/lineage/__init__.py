"""Weight lineage: did B's weights come from A's, or were they trained independently?"""
